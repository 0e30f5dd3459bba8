"""face-agent: edge-to-cloud face recognition agent."""

__version__ = "0.1.0"
