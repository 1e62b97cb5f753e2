"""Build trigger: settled payload uploads and build completions become at most one build."""
