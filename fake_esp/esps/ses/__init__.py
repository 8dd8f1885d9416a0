"""Amazon SES: SES v2 SendEmail over HTTP (boto3 sesv2), SES events through SNS, the SES SMTP interface's
limits and replies (454 throttling after DATA). api.py is its HTTP API, webhook.py its event webhook
format, profile.yaml its published limits, replies and latency (every number cited).
"""
