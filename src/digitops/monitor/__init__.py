"""The production monitor: observe the request store, decide, and act through the pipeline and
the registry (`digitops monitor`)."""
