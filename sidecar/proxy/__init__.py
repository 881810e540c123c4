"""The data plane: outbound (app → mesh) and inbound (mesh → app) listeners."""
