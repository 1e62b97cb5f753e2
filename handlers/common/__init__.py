"""Code shared by every Lambda handler (packaged into each zip)."""
