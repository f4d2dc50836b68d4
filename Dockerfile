# Inpaint Studio as a container: docker build -t inpaint-studio . && docker run -p 8501:8501 \
#   -v inpaint-models:/models inpaint-studio   (add --gpus all on a machine with NVIDIA's toolkit)
FROM python:3.11-slim

# OpenCV needs libGL and GLib at import time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 app
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY --chown=app:app . .

# Models live in a volume: fetch them once with
#   docker run --rm -v inpaint-models:/models inpaint-studio python -m core models download
ENV INPAINT_STUDIO_MODELS_DIR=/models \
    HF_HOME=/models/huggingface \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    PORT=8501 \
    ADDRESS=0.0.0.0 \
    BASE_URL=
RUN mkdir -p /models && chown app:app /models
VOLUME /models
USER app
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["python", "scripts/healthcheck.py"]
CMD ["sh", "scripts/serve.sh"]
