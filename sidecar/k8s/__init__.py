"""Running the mesh on Kubernetes: manifests rendered from a run file and the home's policy."""
