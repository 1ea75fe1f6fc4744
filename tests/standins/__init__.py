"""The stand-ins the tests share, one job a module.

- `jobs`: job objects in the API's v3 and v2 spellings, broken bodies, `go_time`.
- `cce`: `FakeCCE`, the CCE job API (show-job and the v2 list) on loopback, with
  injectable faults; `python -m tests.standins.cce` serves the soak's API.
- `iam`: the CCE and IAM APIs checking tokens, passwords and signatures as the cloud does.
- `clocks`: a clock and sleeps that move only when the test says.
- `processes`: free ports, servers in subprocesses and threads, running the exporter.
- `scenario`: the system tests' six jobs and the alert webhook.
"""
