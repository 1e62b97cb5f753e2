"""Generated documentation tables and the scripts that generate them."""
