"""The FoundryOps entity-resolution service: datasets, snapshots, matching, jobs and credits."""
