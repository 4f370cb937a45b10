"""Who is calling: API keys, users, projects."""
