"""Server-side chat conversations for the portal: storage, branching, search, export, attachments.

`store` persists conversations and their message trees; `tree` holds the branching rules;
`export` writes Markdown and versioned JSON (and reads the JSON back); `attachments` validates
uploads and extracts their text; `api` is the `/api/chat` router. The streaming send itself lives
with the /v1 proxy; it persists through `store.append_message`.
"""
