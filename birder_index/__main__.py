from birder_index.cli import cli

cli()
