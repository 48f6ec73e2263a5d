"""Everything that executes a recipe: parsing, rounds, the runner, streaming, step files and the resume journal."""
