# Mirrors README's app command: install the pinned requirements, serve the app on port 8501.
FROM python:3.11-slim
WORKDIR /app
# fonts for the file names on image sheets: DejaVu (Latin, Greek, Cyrillic), WenQuanYi Micro Hei (CJK)
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core fonts-wqy-microhei \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DCE_RUNS_DIR=/data/runs DCE_CACHE_DIR=/data/cache
VOLUME /data
EXPOSE 8501
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
