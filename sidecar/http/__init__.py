"""HTTP/1.1 pieces of the data plane: pure request rules and the thin h11-over-trio adapter."""
