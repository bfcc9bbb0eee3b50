-- Free tier: one general assistant with the two basic tools, in the lobby.
-- Starter, professional and enterprise extend this file, so the assistant,
-- the basic tools, the lobby and the default model are defined here once.
-- Tool names are MindRoom's (lua/mindroom_tools.lua); every agent joins at
-- least one of the tier's rooms; router and memory: see lua/render.lua.
return {
  name = "free",
  display_name = "Free",
  limits = { memory_mb = 256, cpu = 0.25, storage_gb = 1, agents = 1, messages_per_day = 100 },
  rooms = {
    lobby = { display_name = "Lobby", description = "Where every agent listens: start any conversation here." },
  },
  agents = {
    {
      name = "assistant",
      display_name = "Assistant",
      role = "A general-purpose assistant that answers questions and helps with everyday tasks.",
      tools = { "calculator", "file" },
      model = "default",
      rooms = { "lobby" },
    },
  },
  tools = { "calculator", "file" },
  -- Every model goes through OpenRouter (MindRoom's own default config does
  -- too): one key per instance, OPENROUTER_API_KEY — the instance's own key
  -- with the tier's monthly budget (model_budget_usd, lua/model_key.lua) or
  -- the provisioner-wide one (mindroom credentials_sync.py:50-67 reads it
  -- into MindRoom's credential store). Ids are OpenRouter's.
  models = {
    default = { provider = "openrouter", id = "anthropic/claude-haiku-4.5" },
  },
  router = { model = "default" },
  memory = { backend = "file" },
  flags = { custom_domains = false, matrix = true },
}
