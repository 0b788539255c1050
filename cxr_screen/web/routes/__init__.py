"""The pages and endpoints of the web app, one module per page."""
