"""tips-bench: evaluate frozen vision and vision-language backbones as the TIPS papers do."""

__version__ = "0.1.0"
