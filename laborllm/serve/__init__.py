"""`laborllm serve`: a local web app to ask fitted models about one career, sample its futures and
browse a run's comparison (app: the FastAPI app; catalog: what is served; answers: the JSON;
charts: the SVG pictures; static/: the page)."""
