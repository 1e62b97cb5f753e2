"""Build trigger: turns settled payload uploads and pipeline completions into at most one image build."""
