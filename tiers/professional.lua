-- Professional tier: starter plus a writer, an analyst and a scheduler. Its
-- add_tools completes the catalogue, so professional grants every tool there is;
-- all agents run on Claude Sonnet. email needs SMTP settings and
-- google_calendar a Google account, both added by the customer in MindRoom's
-- dashboard (lua/mindroom_tools.lua `setup`).
return {
  name = "professional",
  display_name = "Professional",
  extends = "starter",
  model_budget_usd = 150, -- its own OpenRouter key's monthly budget (OPENROUTER_MANAGEMENT_KEY)
  limits = { memory_mb = 2048, cpu = 1.0, storage_gb = 10, agents = 6, messages_per_day = 2000 },
  add_tools = { "email", "google_calendar", "browser", "python", "csv" },
  add_rooms = {
    writing = { display_name = "Writing", description = "Documents, posts and e-mails to draft and edit." },
    analysis = { display_name = "Analysis", description = "Data, spreadsheets and Python notebooks." },
    planning = { display_name = "Planning", description = "Calendar, meetings and reminders." },
  },
  add_agents = {
    {
      name = "writer",
      display_name = "Writer",
      role = "Drafts, edits and proofreads documents, posts and e-mails.",
      tools = { "file", "duckduckgo", "browser" },
      model = "default",
      rooms = { "lobby", "writing" },
    },
    {
      name = "analyst",
      display_name = "Analyst",
      role = "Analyses data with Python and spreadsheets and explains the results.",
      tools = { "python", "csv", "calculator", "file" },
      model = "default",
      rooms = { "lobby", "analysis" },
    },
    {
      name = "scheduler",
      display_name = "Scheduler",
      role = "Manages the calendar, plans meetings and sends reminders by e-mail.",
      tools = { "google_calendar", "email" },
      model = "default",
      rooms = { "lobby", "planning" },
    },
  },
  models = {
    default = { provider = "openrouter", id = "anthropic/claude-sonnet-4.5" },
  },
}
