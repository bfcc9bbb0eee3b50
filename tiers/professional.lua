-- Professional tier: starter plus a writer, an analyst and a scheduler. Its
-- add_tools completes the catalogue, so professional grants every tool there is;
-- all agents run on Claude Sonnet.
return {
  name = "professional",
  display_name = "Professional",
  extends = "starter",
  model_budget_usd = 150, -- its own OpenRouter key's monthly budget (OPENROUTER_MANAGEMENT_KEY)
  limits = { memory_mb = 2048, cpu = 1.0, storage_gb = 10, agents = 6, messages_per_day = 2000 },
  add_tools = { "email", "calendar", "browser", "python", "csv" },
  add_agents = {
    {
      name = "writer",
      display_name = "Writer",
      role = "Drafts, edits and proofreads documents, posts and e-mails.",
      tools = { "file", "web_search", "browser" },
      model = "default",
    },
    {
      name = "analyst",
      display_name = "Analyst",
      role = "Analyses data with Python and spreadsheets and explains the results.",
      tools = { "python", "csv", "calculator", "file" },
      model = "default",
    },
    {
      name = "scheduler",
      display_name = "Scheduler",
      role = "Manages the calendar, plans meetings and sends reminders by e-mail.",
      tools = { "calendar", "email" },
      model = "default",
    },
  },
  models = {
    default = { provider = "anthropic", id = "claude-sonnet-4-5" },
  },
}
