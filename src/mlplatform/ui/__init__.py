"""The web console at /ui: server-rendered pages over the platform's services, behind a sign-in session."""
