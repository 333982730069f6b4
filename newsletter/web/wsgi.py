"""For any WSGI server: `gunicorn newsletter.web.wsgi:app` (config from $NEWSLETTER_CONFIG or ./newsletter.toml)."""

from . import create_app

app = create_app()
