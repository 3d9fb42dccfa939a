"""Version 1 of the fedft wire protocol."""
