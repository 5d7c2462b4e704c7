# GPU training image: the official TensorFlow GPU image of the pinned version, plus imgclf.
#   docker build -t imgclf .
#   docker run --gpus all --rm -v "$PWD/data:/data" -v "$PWD/models:/models" imgclf \
#       python train_model.py --train_dataset_path /data/train --test_dataset_path /data/test \
#       --model_folder_path /models --model_type ResnetModel
# The image already holds TensorFlow (with CUDA); pip sees the pin satisfied and keeps it.
ARG TF_VERSION=2.21.0
FROM tensorflow/tensorflow:${TF_VERSION}-gpu

WORKDIR /opt/imgclf
COPY requirements.txt setup.cfg pyproject.toml README.md ./
RUN pip install --no-cache-dir -r requirements.txt
COPY imgclf ./imgclf
COPY train_model.py eval_model.py eval_model_serving.py ./
RUN pip install --no-cache-dir --no-deps .

# Pretrained ImageNet weights are downloaded by Keras into this cache; mount it to keep them.
ENV KERAS_HOME=/root/.keras
CMD ["python", "train_model.py", "--help"]
