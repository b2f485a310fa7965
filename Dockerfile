# The image every pod of the RayJob runs (cluster/configs/raycluster-8xa100.yaml names it): Ray's CUDA image at the
# Ray the project pins, with the project, its GPU extra (vLLM's CUDA build and the torch it pins), DeepSpeed and the
# trackers. Build and push it where the cluster pulls from:
#   docker build -t REGISTRY/hrlaif-ray:0.1.0 . && docker push REGISTRY/hrlaif-ray:0.1.0
# (and set the RayJob's `image:` to that name). Models, data and checkpoints are volumes, not in the image.
FROM rayproject/ray:2.60.0-py311-gpu
WORKDIR /app
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users hrlaif_ray hrlaif_ray
COPY --chown=ray:users actors actors
COPY --chown=ray:users cluster cluster
RUN pip install --no-cache-dir ".[gpu,tracking]"
# Tensors through the object store without a copy, in the driver and in every worker the pod starts.
ENV RAY_ENABLE_ZERO_COPY_TORCH_TENSORS=1
