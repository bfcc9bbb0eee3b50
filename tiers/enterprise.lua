-- Enterprise tier: every professional agent plus an orchestrator that routes
-- work between them; every tool; Claude Opus by default and GPT-4 available
-- (both through OpenRouter, as every tier's models: OPENROUTER_API_KEY);
-- no message or agent caps, custom domains and per-customer limits.
return {
  name = "enterprise",
  display_name = "Enterprise",
  extends = "professional",
  -- agents and messages_per_day are absent: unlimited.
  model_budget_usd = 0, -- custom: no included OpenRouter budget (MindRoom's pricing)
  limits = { memory_mb = 8192, cpu = 4.0, storage_gb = 100 },
  add_agents = {
    {
      name = "orchestrator",
      display_name = "Orchestrator",
      role = "Breaks requests into tasks, hands them to the right agents and assembles the answer.",
      tools = { "google_calendar", "email", "file", "duckduckgo" },
      model = "default",
      rooms = { "lobby", "research", "dev", "writing", "analysis", "planning" },
    },
  },
  models = {
    default = { provider = "openrouter", id = "anthropic/claude-opus-4.1" },
    gpt4 = { provider = "openrouter", id = "openai/gpt-4.1" },
  },
  flags = { custom_domains = true, matrix = true, custom_limits = true },
}
