-- Free tier: one general assistant with the two basic tools.
-- Starter, professional and enterprise extend this file, so the assistant,
-- the basic tools and the default model are defined here once.
return {
  name = "free",
  display_name = "Free",
  limits = { memory_mb = 256, cpu = 0.25, storage_gb = 1, agents = 1, messages_per_day = 100 },
  agents = {
    {
      name = "assistant",
      display_name = "Assistant",
      role = "A general-purpose assistant that answers questions and helps with everyday tasks.",
      tools = { "calculator", "file" },
      model = "default",
    },
  },
  tools = { "calculator", "file" },
  models = {
    default = { provider = "anthropic", id = "claude-haiku-4-5" },
  },
  flags = { custom_domains = false, matrix = true },
}
