"""LatentWire: frozen heterogeneous LLMs reading one compact continuous interlingua.

The package is the library behind the Snakemake workflow in ``workflow/``; every rule calls a
thin subcommand of the ``latentwire`` console command (see ``latentwire/cli``).
"""

__version__ = "0.1.0"
