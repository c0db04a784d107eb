# Mirrors README's app command: install the pinned requirements, serve the app on port 8501.
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DCE_RUNS_DIR=/data/runs DCE_CACHE_DIR=/data/cache
VOLUME /data
EXPOSE 8501
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
