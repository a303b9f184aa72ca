"""`image-gen`: the PEFT suite's image-generation benchmark (FLUX.2-klein learns a concept; DINOv2 scores it).

- config.py: its parameters (the keys of PEFT's image-gen `default_training_params.json`);
- data.py: the concept dataset, its split and the training images' preprocessing;
- generation.py: the pipeline's companions, caching, the flow-matching batch and loss, image generation;
- task.py: the Task (scores, drift, the images saved with each run).
The definitions are PEFT's (docs/image-gen.md says where peftbench adds a figure beside one).
"""
