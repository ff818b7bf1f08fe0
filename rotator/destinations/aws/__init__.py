"""The AWS Secrets Manager store kind."""
