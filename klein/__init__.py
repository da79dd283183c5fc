"""Klein Studio: run the FLUX.2 [klein] image models yourself."""

__version__ = "0.1.0"
