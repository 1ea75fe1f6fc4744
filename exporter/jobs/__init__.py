"""What a job is: its IDs, times, tree, the API's two spellings, and its snapshots."""
