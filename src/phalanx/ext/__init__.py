"""Optional adapters to other systems, imported only when a program names them."""
