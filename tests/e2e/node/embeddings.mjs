// embeddings.create with the SDK's default encoding (it asks for base64 and decodes it) and with
// encoding_format "float". Env: LUMEN_BASE_URL, LUMEN_API_KEY, LUMEN_MODEL. Prints one JSON object.
import OpenAI from "openai";

const client = new OpenAI({
  apiKey: process.env.LUMEN_API_KEY,
  baseURL: process.env.LUMEN_BASE_URL,
  maxRetries: 0,
});

const input = ["The quick brown fox", "jumps over the lazy dog"];
const decoded = await client.embeddings.create({ model: process.env.LUMEN_MODEL, input });
const floats = await client.embeddings.create({
  model: process.env.LUMEN_MODEL,
  input,
  encoding_format: "float",
});

const summary = (result) => ({
  object: result.object,
  model: result.model,
  usage: result.usage,
  data: result.data.map((item) => ({
    index: item.index,
    is_array: Array.isArray(item.embedding),
    embedding: Array.from(item.embedding),
  })),
});

console.log(JSON.stringify({ default: summary(decoded), float: summary(floats) }));
