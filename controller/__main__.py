"""`python -m controller` runs the same CLI as the `converge` script."""

from controller import cli

if __name__ == "__main__":
    cli.run()
