-- The WebShop catalogue's search database (retro/envs/webshop_catalog.py names each block).
-- Input: the products Parquet file written by the catalogue build. Output: a `products` table and a BM25
-- full-text index (DuckDB fts) over title, description, features and option values. Digits are kept in
-- the index (fts drops them by default), so "pack of 4" and "size 9" can be searched for.

-- name: create_products
CREATE TABLE products AS
SELECT
    product_id, goal_index, kind, product_type, category, title, description, features, attributes,
    options, price,
    array_to_string(features, ' ') AS features_text,
    options_text
FROM read_parquet($path)
ORDER BY product_id;

-- name: create_index
PRAGMA create_fts_index(
    'products', 'product_id', 'title', 'description', 'features_text', 'options_text',
    stemmer = 'porter', stopwords = 'english', ignore = '(\.|[^a-z0-9])+', strip_accents = 1, lower = 1,
    overwrite = 1
);

-- name: search
-- The best `limit` products for a free-text query, best first; ties by product id (deterministic).
WITH scored AS (
    SELECT product_id, title, price, fts_main_products.match_bm25(product_id, $query) AS score
    FROM products
)
SELECT product_id, title, price
FROM scored
WHERE score IS NOT NULL
ORDER BY score DESC, product_id
LIMIT $limit;

-- name: product
SELECT product_id, product_type, category, title, description, features, attributes, options, price
FROM products
WHERE product_id = $product_id;
