"""The mesh state directory as the local control plane: resources, App ID bindings, versions."""
