"""Running a recipe: the pipeline, run folders and manifests, the run lock, the closing summary."""
