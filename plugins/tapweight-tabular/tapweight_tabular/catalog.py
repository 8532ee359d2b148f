"""The data sets the ``tabular`` domain offers: scikit-learn's bundled ones, by name.

Plain data, no imports: ``plugin.py`` registers them from this table without importing
scikit-learn or torch (every ``tapweight`` command loads the plugin); ``data.py`` loads them.
"""

#: data set name -> (loader in ``sklearn.datasets``, label column name, description)
SKLEARN_DATASETS: dict[str, tuple[str, str, str]] = {
    "breast-cancer": ("load_breast_cancer", "benign",
                      "Wisconsin diagnostic breast cancer: 569 rows, 30 features, benign or not"),
    "wine": ("load_wine", "cultivar",
             "wine recognition: 178 rows, 13 chemical features, 3 cultivars"),
    "digits": ("load_digits", "digit",
               "optical digits: 1797 rows, 8x8 = 64 pixel features, 10 classes"),
    "diabetes": ("load_diabetes", "progression",
                 "diabetes: 442 rows, 10 features, disease progression after one year"),
}
