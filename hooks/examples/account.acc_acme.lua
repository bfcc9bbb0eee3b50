-- Example hook: ACME Corp (account acc_acme), an enterprise customer with
-- its own domain for the web app and single sign-on settings for the
-- backend. To use it, copy it into HOOKS_DIR and send SIGHUP.
return {
  description = "ACME: frontend on ai.acme.example, SSO settings on the backend",

  desired = function(state, ctx)
    for _, app in ipairs(state.apps) do
      if app.role == "frontend" then
        app.domains = { "ai.acme.example" }
      elseif app.role == "backend" then
        app.env.ACME_SSO_ISSUER = "https://sso.acme.example"
        app.env.ACME_SSO_CLIENT_ID = "mindroom-" .. ctx.subscription_id
        app.env.MINDROOM_ALLOWED_ORIGINS = "https://ai.acme.example"
      end
    end
  end,
}
