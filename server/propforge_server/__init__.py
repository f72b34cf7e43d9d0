"""PropForge server side: job queue, gRPC service, HTTP bridge, watch mode, CLI."""
__version__ = "0.1.0"
