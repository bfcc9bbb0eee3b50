-- Starter tier: free plus a researcher and a coder, and the tools they need
-- (web search by DuckDuckGo, which needs no key; shell; GitHub, which the
-- customer connects in MindRoom's dashboard by OAuth). Same default model as free.
return {
  name = "starter",
  display_name = "Starter",
  extends = "free",
  model_budget_usd = 15, -- its own OpenRouter key's monthly budget (OPENROUTER_MANAGEMENT_KEY)
  limits = { memory_mb = 512, cpu = 0.5, storage_gb = 5, agents = 3, messages_per_day = 500 },
  add_tools = { "duckduckgo", "wikipedia", "shell", "github" },
  add_rooms = {
    research = { display_name = "Research", description = "Web research and cited summaries." },
    dev = { display_name = "Development", description = "Code, shells and GitHub repositories." },
  },
  add_agents = {
    {
      name = "researcher",
      display_name = "Researcher",
      role = "Searches the web, reads sources and writes concise, cited summaries.",
      tools = { "duckduckgo", "wikipedia", "file" },
      model = "default",
      rooms = { "lobby", "research" },
    },
    {
      name = "coder",
      display_name = "Coder",
      role = "Writes, runs and reviews code, and works with GitHub repositories.",
      tools = { "shell", "github", "file", "calculator" },
      model = "default",
      rooms = { "lobby", "dev" },
    },
  },
}
