from exporter.cli import app

app()
