"""Real servers on loopback, started by the tests: SMTP (aiosmtpd) and SendGrid's contract (Prism)."""
