"""Label images offline with a saved model: folders, globs, file lists or TFRecord directories.

The command `imgclf-predict` (installed with imgclf) is the same program; see
`imgclf/cli/predict.py`.

    python predict_model.py --model_path models/LenetModel --output labels.parquet photos/
"""

import sys

from imgclf.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
