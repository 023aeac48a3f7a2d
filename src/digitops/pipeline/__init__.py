"""Orchestration: KFP components (thin wrappers over `digitops.stages`) and the pipeline DAG."""
