"""`face-agent web`: the browser console (optional extra `web`: Starlette, uvicorn, Jinja2).

    app.py        the app: the route modules mounted behind the session, host and CSRF guards
    routes/       one module per page (live, events, people, unknowns, reports, auth, files): pages and actions
    site.py       what every page shares: templates, flash messages, the data layer, retrain-and-say
    console.py    the data layer: status file, live frame, event log, gallery, sightings; enrollment through
                  the gallery, naming and rejecting through agent.naming
    security.py   password hashes, login session, CSRF, request size, files only from the agent's folders
    templates/    Jinja2 pages (htmx attributes for the actions)
    static/       console.css, console.js and htmx

Vendored: `static/htmx.min.js` is htmx 2.0.11 (`dist/htmx.min.js` of the npm package `htmx.org@2.0.11`,
sha256 d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717), Zero-Clause BSD licence
(`static/htmx.LICENSE.txt`). Nothing is fetched at install or run time.
"""
