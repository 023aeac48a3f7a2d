"""The labeling loop: which stored requests to label (`select`), the tasks and annotations of
Label Studio (`tasks`, `studio`)."""
