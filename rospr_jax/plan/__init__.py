"""`rospr plan`: the steps a run executes, compiled ahead of time for a target (a Cloud TPU slice on a
machine without one, or this process's devices), with their memory per device, FLOPs and time."""
