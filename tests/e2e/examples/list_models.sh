curl https://your-lumen-instance/v1/models \
  -H "Authorization: Bearer sk_your_api_key_here"
