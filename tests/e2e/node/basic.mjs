// The seed's "Node.js (openai SDK)" example, parameterised by LUMEN_BASE_URL, LUMEN_API_KEY and
// LUMEN_MODEL (and LUMEN_PROMPT, default: the seed's prompt). Prints the result as one JSON object.
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.LUMEN_API_KEY,
  baseURL: process.env.LUMEN_BASE_URL,
  maxRetries: 0,
});

const response = await client.chat.completions.create({
  model: process.env.LUMEN_MODEL,
  messages: [
    { role: "user", content: process.env.LUMEN_PROMPT ?? "Explain quantum entanglement in plain English" }
  ],
});

console.log(JSON.stringify({
  content: response.choices[0].message.content,
  role: response.choices[0].message.role,
  finish_reason: response.choices[0].finish_reason,
  id: response.id,
  object: response.object,
  model: response.model,
  usage: response.usage,
}));
