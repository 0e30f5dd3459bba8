"""The web console's pages, one module per page (each a `routes` list mounted by agent.web.app.create_app).

    auth.py       login and logout
    live.py       Live: the latest annotated frame and the agent's figures
    events.py     Events: the event log, a track's kept faces, "that was not X"
    people.py     People: enrolled people, photos, upload, rename, forget, retrain
    unknowns.py   Unknown people: name, merge, ignore
    reports.py    the last eval/tune reports, run tune
    files.py      images, only from the agent's own folders
"""
