"""Talking to Huawei Cloud: transport, client, rate limit and authentication."""
